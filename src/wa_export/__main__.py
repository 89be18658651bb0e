"""`python -m wa_export`: the same entry point as the `wa-export` console script."""

from wa_export.cli.app import main

if __name__ == "__main__":
    main()
