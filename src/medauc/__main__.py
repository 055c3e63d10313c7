import sys

from medauc.cli import main

sys.exit(main())
