"""The wire protocol as pure data: parsing task arrays, validating tasks, building replies.

Nothing under this package imports torch or touches the network.
"""
