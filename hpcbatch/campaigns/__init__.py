"""Benchmark campaigns: parameter sweeps of MPI programs, their figures, references and reports.

A campaign file (YAML) names benchmarks -- a command with placeholders
(``{nodes}``, ``{ppn}``, ``{msg_size}`` ...), a parameter space, the figures to
read from the output (regular expressions with named groups and units), sanity
conditions and performance references per pool or host label with tolerances,
as ReFrame writes them (``(value, lower, upper, unit)``). ``hpcbatch bench run``
runs it as Batch work (one job per campaign, one multi-instance task per run);
``bench report`` and ``bench compare`` read the results back.

The modules here are pure (no service, no network):

* :mod:`.model` -- the campaign file (pydantic) and units;
* :mod:`.space` -- parameter space expansion (lists, ranges, zipped or crossed);
* :mod:`.figures` -- figure extraction and sanity checks of one run;
* :mod:`.results` -- run records, groups of repeats, reference checks, the summary;
* :mod:`.stats` -- comparison of two campaigns with a significance test;
* :mod:`.report` -- tables (text, Markdown, CSV, JSON) and plots (PNG, HTML);
* :mod:`.osu` -- an OSU-style allreduce/bcast latency sweep written with mpi4py;
* :mod:`.reframe_backend` -- ReFrame's ``hpcbatch`` launcher and scheduler.
"""
