"""`python -m shoal.client.cli ...`: the same as the `shoal` console script."""
from __future__ import annotations

from shoal.client.cli import main

if __name__ == "__main__":
    main()
