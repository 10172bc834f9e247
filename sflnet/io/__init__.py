"""Files in and out: checkpoints (:mod:`.checkpoint`), images and PNGs (:mod:`.images`), and the
built-in digits (:mod:`.digits`). This ``__init__`` imports nothing."""
