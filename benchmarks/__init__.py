"""One benchmark per stage, each a script (``python benchmarks/<name>.py``) and a module whose
``measure(quick)`` ``distill-ray bench`` runs (``distill_ray/bench.py``)."""
