from mdmserver.cli import main

main()
