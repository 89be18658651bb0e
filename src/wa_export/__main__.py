from wa_export.cli.app import main

if __name__ == "__main__":
    main()
