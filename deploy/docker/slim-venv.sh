#!/bin/sh
# Drop what a runtime virtual environment never uses, and strip the symbols from its native
# libraries. The Dockerfile's builder stage and deploy/image-size.sh both run this, so the size
# measured is the size shipped. Needs `strip` (binutils): the builder stage installs it, the
# runtime stage never has it.
#  - the installers (pip, setuptools, wheel);
#  - the packages' test suites and byte-code caches (without the caches the code is compiled in
#    memory at start-up, ~0.4 s here; the root filesystem is read-only);
#  - what only building or type-checking against a package needs: C headers and sources, Cython
#    declarations, static libraries, type stubs (*.pyi), numpy's f2py and distutils;
#  - onnxruntime's offline tools (model conversion, quantization, transformer optimisation and
#    their sample data), which onnxruntime itself never imports, and its C-API library
#    libonnxruntime.so (35 MB), which is there for C programs: the Python module has the whole
#    runtime linked into it and never loads it (not in /proc/self/maps after a session ran);
#  - Pillow's Tk glue (PIL._imagingtk): it imports tkinter, which slim Pythons do not have (the
#    official python:3.11-slim removes Tk's libraries, Debian's python3 leaves tkinter to a
#    package of its own), and the service draws no Tk windows;
#  - Pillow's AVIF codec (PIL._avif and its libavif, 5 MB): the service refuses AVIF before
#    Pillow sees it (service/imaging.py's formats; tests/deploy checks that they still leave it
#    out), and Pillow treats the module's absence as "AVIF not supported";
#  - Pillow's TrueType text rendering (PIL._imagingft with FreeType, HarfBuzz and Brotli, 3 MB):
#    the service draws no text (tests/deploy checks that it does not use ImageFont);
#  - uvicorn[standard]'s websockets and watchfiles (1.9 MB): the server turns WebSockets off
#    (ws="none") and never reloads; uvicorn imports each only if it is there;
#  - the installers' file lists (*.dist-info/RECORD): nothing uninstalls here;
#  - symbol tables of the native libraries (`strip --strip-unneeded`: what the dynamic loader
#    needs stays). Many wheels ship them unstripped (uvloop's loop.so: 14 MB -> 2 MB).
set -eu
venv="${1:?usage: slim-venv.sh VENV}"
command -v strip >/dev/null || { echo "slim-venv.sh: needs strip (binutils)" >&2; exit 1; }
if "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    "$venv/bin/python" -m pip uninstall --quiet --yes pip setuptools wheel 2>/dev/null
fi
rm -f "$venv"/bin/pip "$venv"/bin/pip3 "$venv"/bin/pip3.*
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
find "$site" -type d \( -name tests -o -name __pycache__ \) -prune -exec rm -rf {} +
ort="$site/onnxruntime"
rm -rf "$ort"/transformers "$ort"/quantization "$ort"/tools "$ort"/datasets \
    "$ort"/capi/libonnxruntime.so.* \
    "$site"/numpy/f2py "$site"/numpy/distutils "$site"/numpy/_core/include
rm -f "$site"/PIL/_imagingtk.* "$site"/PIL/ImageTk.py "$site"/PIL/_avif.* "$site"/pillow.libs/libavif-* \
    "$site"/PIL/_imagingft.* "$site"/pillow.libs/libfreetype-* "$site"/pillow.libs/libharfbuzz-* \
    "$site"/pillow.libs/libbrotli*
rm -rf "$site"/websockets "$site"/websockets-*.dist-info "$site"/watchfiles "$site"/watchfiles-*.dist-info
rm -f "$site"/*.dist-info/RECORD "$venv"/bin/watchfiles "$venv"/bin/websockets
rm -f "$venv"/bin/f2py "$venv"/bin/numpy-config "$venv"/bin/onnxruntime_test
find "$site" -type f \( -name '*.pyi' -o -name '*.h' -o -name '*.c' -o -name '*.pxd' \
    -o -name '*.pyx' -o -name '*.a' \) -delete
# A stripped copy replaces the library only when it is smaller and still loads: strip rewrites
# the program headers, and on libraries that auditwheel's patchelf already rewrote the result can
# be unloadable ("ELF load command address/offset not page-aligned": numpy's OpenBLAS).
find "$site" -type f \( -name '*.so' -o -name '*.so.*' \) | while IFS= read -r lib; do
    strip --strip-unneeded -o "$lib.stripped" "$lib"
    if [ "$(wc -c <"$lib.stripped")" -lt "$(wc -c <"$lib")" ] \
        && "$venv/bin/python" -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1])' "$lib.stripped" \
            2>/dev/null; then
        cat "$lib.stripped" >"$lib"  # in place: the file keeps its mode and owner
    fi
    rm -f "$lib.stripped"
done
