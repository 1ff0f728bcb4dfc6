from frugalserve.cli import main

raise SystemExit(main())
