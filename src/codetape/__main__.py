from codetape.cli import main

main()
