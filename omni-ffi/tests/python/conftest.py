# The generated module and the cdylib are copied side by side into a temp
# directory by run-binding-tests.sh (OMNI_FFI_PYDIR), as an app would ship them.
import os
import sys

sys.path.insert(0, os.environ.get("OMNI_FFI_PYDIR", os.path.join(os.path.dirname(__file__), "../../../bindings/python")))
