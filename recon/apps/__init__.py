"""The app layer: what the ``recon`` command runs.

Each module is one command (or a family of them) built on the library (``operators``, ``recon.priors``,
``recon.samplers``, ``recon.data``, ``recon.training``, ``recon.metrics``, ``recon.classical``, ``recon.tasks``);
the library never imports this package. A command's function (``command(...)``; ``demo.mri`` and ``demo.ct``) takes
plain values (``recon.cli`` turns the parsed options into them), prints the report and returns the exit status.

    settings        the settings base shared by MRI and CT, the slice selection, the device check
    io              the one atomic writer of results (HDF5, JSON, CSV, PNG) on ``recon.atomic``
    reconstruct     MRI reconstruction of fastMRI files           (recon reconstruct)
    datasets        folders of fastMRI files -> submission files   (recon reconstruct PATH... --out DIR/)
    evaluate        leaderboard metrics of a submission folder     (recon evaluate)
    reconstruct_ct  sparse-view / limited-angle CT                 (recon reconstruct-ct)
    uncertainty     posterior sample maps of one slice             (recon uncertainty)
    sweep           mask sweeps, one CSV row per run               (recon sweep)
    tasks           the generative tasks as PNG figures            (recon synthesize | inpaint | ...)
    demo            the MRI and CT demos                           (recon demo [--ct])
    info            what a fastMRI file holds                      (recon info)
    simulate        held-out brain slices as a fastMRI file        (recon simulate)
    train           training a prior from a config file           (recon train)
"""
