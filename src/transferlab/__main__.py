from transferlab.cli import main

main()
