"""Training of Kiln's demo model `kiln:shapes@1` on scenes it renders itself.

The server never imports this package; `kiln.demo.cli` is its command line.
"""
