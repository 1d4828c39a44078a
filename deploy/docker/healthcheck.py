"""Container health check: exit 0 when the server answers /readyz with 200, else 1.

python:3.11-slim has no curl or wget, so the image's HEALTHCHECK runs this with the standard
library only. It reads the same CONVSCOPE_PORT the server does, so a changed port needs no
second edit.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("CONVSCOPE_PORT", "8000")
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as e:  # HTTPError (503 while loading) included
        print(f"{url}: {e}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
