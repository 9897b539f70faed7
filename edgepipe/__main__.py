from edgepipe.cli import main

main(prog_name="edgepipe")
