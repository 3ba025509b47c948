from callserver.cli import main

raise SystemExit(main())
