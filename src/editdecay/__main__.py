from editdecay.cli import main

raise SystemExit(main())
