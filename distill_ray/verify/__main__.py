"""`python -m distill_ray.verify INPUT.jsonl --output OUT.jsonl`: see `distill_ray.verify.jsonl`."""

import sys

from distill_ray.verify.jsonl import main

sys.exit(main())
