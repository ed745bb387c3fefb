from trtflow.cli.main import main

raise SystemExit(main())
