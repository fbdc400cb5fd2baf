"""Voice gender (and any audio classes): raw speech in, class out, log-mel features in the graph.

Verbs: ``rnnkit voice_gender prepare|train|evaluate|predict|export`` (see ``app.py``).
"""
