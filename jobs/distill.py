"""`ray job submit` entrypoint for a distillation run (or any single stage).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/distill.py run --config configs/demo.yaml

Inside a submitted job RAY_ADDRESS names the cluster, so the run joins it instead of starting its own.
The arguments are exactly those of the `distill-ray` command.
"""

import sys
from pathlib import Path

# The working directory is uploaded as is; make the package importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
