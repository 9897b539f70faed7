"""The stages (build, train, export, bench, report) and the runner that sequences them."""
