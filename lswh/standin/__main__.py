from lswh.standin.cli import main

main()
