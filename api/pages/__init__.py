"""The staff pages (``/personal``) and the patient e-service (``/mitt``): design §8."""
