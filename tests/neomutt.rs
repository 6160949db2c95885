//! NeoMutt with the documented `smime_*_command` set (tests to come).
