"""The protocol package is the wire layer: it imports neither torch nor the catalog's database,
the preprocessors' OpenCV or image libraries."""

from __future__ import annotations

import subprocess
import sys


def test_the_protocol_imports_no_engine_database_or_image_library():
    code = (
        "import sys, pkgutil, importlib, kiln.protocol as p\n"
        "for module in pkgutil.iter_modules(p.__path__): importlib.import_module(f'kiln.protocol.{module.name}')\n"
        "print(sorted({'torch', 'diffusers', 'sqlalchemy', 'cv2', 'PIL', 'numpy'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
