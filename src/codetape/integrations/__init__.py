"""Recorders for agent frameworks, each behind its own optional extra.

``codetape.integrations.smolagents`` (``pip install 'codetape[smolagents]'``) records a
smolagents ``CodeAgent``. Nothing is imported here, so ``import codetape`` never needs a
framework: import the integration you use.
"""
