from lswh_standin.cli import main

main()
