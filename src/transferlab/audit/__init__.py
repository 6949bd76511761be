"""Check a labelled image folder before training: unreadable and odd files, exact and near
duplicates (and where they sit: one class, several classes, several splits) and likely
label errors.

One module per library: :mod:`.hashes` wraps imagehash, :mod:`.labels` scikit-learn and
cleanlab, :mod:`.features` the backbone; :mod:`.duplicates` groups, :mod:`.core` runs the
checks and :mod:`.report` renders them. Nothing else in transferlab imports imagehash or
cleanlab. The package imports nothing itself, so that ``evaluate`` can use the hashes
without the rest.
"""
