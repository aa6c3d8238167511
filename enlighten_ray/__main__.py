import sys

from enlighten_ray.cli import main

sys.exit(main())
