#!/usr/bin/env bash
# Install the Debian/Ubuntu packages needed by softhsm/provision.sh and the
# tokenmail PKCS#11 test-suite. Idempotent: does nothing (and prints nothing)
# when everything is already installed.
set -euo pipefail

PKGS=(
  softhsm2                  # SoftHSM v2 PKCS#11 module + softhsm2-util
  opensc                    # pkcs11-tool
  libengine-pkcs11-openssl  # libp11 "pkcs11" OpenSSL engine
  libnss3-tools             # modutil, certutil, cmsutil: NSS loads libtokenmail_pkcs11.so (tests/pkcs11_module.rs)
  openssl
  gnutls-bin                # p11tool (optional, handy for debugging)
  gpgsm
  python3
  libpcsclite-dev           # PC/SC (the agent's PIV backend links libpcsclite)
  pcscd                     # smart card daemon (tests run a private one)
  vsmartcard-vpcd           # virtual reader driver the test card plugs into
  python3-cryptography      # the virtual PIV card (tests/vpiv/piv_card.py)
  yubico-piv-tool           # independent PIV client checking the virtual card
  opensc-pkcs11             # OpenSC's PKCS#11 module (generic smart cards)
  pinentry-tty              # real pinentry driven over a pty in the tests
  util-linux                # unshare (private pcscd mount namespace), setsid
  neomutt                   # the mail client the documented smime_*_command set is tested with
  perl                      # NeoMutt's smime_keys script (File::Copy, Time::Local)
  git                       # tokenmail-gpgsm is tested with real git
  postfix                   # a private Postfix instance behind tokenmail-sendmail (tests/sendmail.rs)
  slapd                     # a throwaway LDAP directory for the [[directory]] tests (cli/tests/certs_ldap.rs)
  ldap-utils                # ldapadd/ldapdelete, loading entries into it
  man-db                    # `man -l` renders the generated manual pages (tests/everyday.rs)
  groff-base                # the formatter man-db runs
  systemd                   # systemd-socket-activate and systemd-analyze (contrib/systemd units, tests/everyday.rs)
  pkg-config
  ca-certificates
)

missing=()
for p in "${PKGS[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done

[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: missing packages (run as root to install): ${missing[*]}" >&2
  exit 1
fi

echo "install-deps.sh: installing ${missing[*]}"
# Postfix for the tests' private instances only: no system mail configuration, no daemon.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
