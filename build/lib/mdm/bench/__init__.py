"""``mdm bench``: one benchmark a file, their shared timing in :mod:`mdm.bench.timing`.

* :mod:`mdm.bench.backbone` -- latency and memory of the backbones and the SSD scan by sequence length;
* :mod:`mdm.bench.throughput` -- images/s by resolution with the real sampler (the paper's Fig. 5);
* :mod:`mdm.bench.video` -- DiM against full spatio-temporal attention as clips grow.
"""
