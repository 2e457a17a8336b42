"""`python -m fanout` is the `fanout` command."""

from fanout.cli import main

main()
