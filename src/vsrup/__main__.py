from vsrup.cli import main

main()
