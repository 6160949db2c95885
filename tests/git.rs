//! git with `gpg.format = x509` and `gpg.x509.program = tokenmail-gpgsm` (tests to come).
