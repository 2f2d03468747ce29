// Makes the shared library importable as the Python module spsr_fast._C; importing
// it runs the TORCH_LIBRARY registrations. Not part of the CMake (LibTorch) build.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
