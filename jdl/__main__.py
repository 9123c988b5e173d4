from jdl.cli import main; raise SystemExit(main())
