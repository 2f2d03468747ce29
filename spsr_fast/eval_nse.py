"""python -m spsr_fast.eval_nse: NSE structure-capturing scores (see spsr_fast.nse.eval)."""
import sys

from .nse.eval import main

if __name__ == "__main__":
    sys.exit(main())
