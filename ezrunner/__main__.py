from ezrunner.cli import main

raise SystemExit(main())
