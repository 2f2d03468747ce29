// Makes the shared library importable as the Python module spsr_fast._C; importing
// it runs the TORCH_LIBRARY registrations. Not part of the CMake (LibTorch) build.
// build_info() answers how this build was made (setup.py writes the header).
#include <Python.h>

#include "spsr_fast_build_info.h"

namespace {

PyObject* build_info(PyObject*, PyObject*) {
  return Py_BuildValue("{s:s,s:s,s:O}", "summary", SPSR_FAST_BUILD_SUMMARY, "cuda_archs",
                       SPSR_FAST_CUDA_ARCHS, "openmp", SPSR_FAST_OPENMP ? Py_True : Py_False);
}

PyMethodDef methods[] = {
    {"build_info", build_info, METH_NOARGS,
     "dict: summary (setup.py's build line), cuda_archs (TORCH_CUDA_ARCH_LIST notation, '' "
     "when CPU-only), openmp (whether the CPU kernels were compiled with OpenMP)"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
