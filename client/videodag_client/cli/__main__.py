"""`python -m videodag_client.cli`, the same as the `videodag` command."""

import sys

from videodag_client.cli import main

sys.exit(main())
