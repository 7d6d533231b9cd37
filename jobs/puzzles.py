"""`ray job submit` entrypoint for the synthetic puzzle job (issue 7).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/puzzles.py --num 1000000 --output outputs/puzzles/dataset

Inside a submitted job RAY_ADDRESS names the cluster, so the job joins it. The arguments are exactly those of
`distill-ray puzzles`; rerunning with the same --output resumes.
"""

import sys
from pathlib import Path

# The working directory is uploaded as is; make the package importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["puzzles", *sys.argv[1:]]))
