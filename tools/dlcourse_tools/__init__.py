"""The instructor's and the repository's tools for the dlcourse book (not installed for students).

- :mod:`dlcourse_tools.grade`: the grading command line (``make release|import|autograde|...``).
- :mod:`dlcourse_tools.grading`: how submissions are imported, run in the sandbox, judged,
  stored in nbgrader's gradebook, and reported.
- :mod:`dlcourse_tools.bench`: ``make bench``, dlcourse against PyTorch and every notebook's run time.
- :mod:`dlcourse_tools.gpu_check`: ``make gpucheck``, every CUDA path checked on a lent GPU in
  minutes (it also runs as a plain script there, with nothing installed).
- :mod:`dlcourse_tools.notebooks`: notebook upkeep (``make strip``, the set-up cell, the cache guard)
  and the one walker of ``_toc.yml``.

``make install`` installs this package (editable) beside :mod:`dlcourse`; ``pip install dlcourse``
and the notebooks' set-up cell never do.
"""
