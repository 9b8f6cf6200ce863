import sys

from faceanon.cli import main

sys.exit(main())
