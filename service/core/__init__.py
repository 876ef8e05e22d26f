"""Foundations every layer uses: settings, the error tree, the HTTP contract's bodies,
the completion record, the request deadline and the one upstream POST helper.

Nothing here imports from the layers above.
"""
