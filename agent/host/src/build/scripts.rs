//! The shell scripts a build runs in its sandboxes for the steps that are
//! not the recipe's own commands (`$1…` are their arguments). They use
//! only POSIX sh, coreutils or busybox, `tar` and `awk`.

/// `USER <name>`: creates the user (home, login shell, passwordless sudo)
/// unless it exists; prints its home directory. `$1` user.
pub const USER: &str = r#"set -eu
u=$1
if ! id "$u" >/dev/null 2>&1; then
  if command -v useradd >/dev/null 2>&1; then
    shell=/bin/sh
    [ -x /bin/bash ] && shell=/bin/bash
    useradd --create-home --shell "$shell" "$u"
  else
    adduser -D -s /bin/sh "$u"
  fi
  mkdir -p /etc/sudoers.d
  printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$u" > "/etc/sudoers.d/90-wrenn-$u"
  chmod 0440 "/etc/sudoers.d/90-wrenn-$u"
fi
awk -F: -v u="$u" '$1 == u { print $6 }' /etc/passwd
"#;

/// `WORKDIR <path>`: creates the directory, owned by the current user,
/// unless it exists. `$1` path, `$2` user.
pub const WORKDIR: &str = r#"set -eu
if [ ! -d "$1" ]; then
  mkdir -p "$1"
  chown "$2:$(id -g "$2")" "$1"
fi
"#;

/// `COPY`/`ADD`: unpacks the step's archive (see `StepContext`) and puts
/// its files in place, owned by the current user, readable by everyone.
/// `$1` archive, `$2` destination, `$3` user, `$4` 1 for a single file
/// copied to a destination that names the file.
pub const COPY: &str = r#"set -eu
archive=$1 dest=$2 owner=$3 single=$4
group=$(id -g "$owner")
t=$(mktemp -d /tmp/.wrenn-copy.XXXXXX)
trap 'rm -rf "$t" "$archive"' EXIT
tar -xf "$archive" -C "$t"
if [ -d "$t/copy" ]; then
  chmod -R a+rX "$t/copy"
  chown -R -h "$owner:$group" "$t/copy"
fi
if [ "$single" = 1 ]; then
  set -- "$t"/copy/*
  if [ -d "$dest" ]; then
    target="$dest/$(basename "$1")"
  else
    mkdir -p "$(dirname "$dest")"
    target=$dest
  fi
  rm -rf "$target"
  cp -a "$1" "$target"
  exit 0
fi
if [ ! -d "$dest" ]; then
  mkdir -p "$dest"
  chown "$owner:$group" "$dest"
fi
if [ -d "$t/copy" ]; then
  cp -a "$t/copy/." "$dest/"
fi
if [ -d "$t/extract" ]; then
  for a in "$t"/extract/*; do
    [ -e "$a" ] || continue
    tar -xf "$a" -C "$dest"
  done
fi
"#;

/// Post-build, as root: package managers' caches and the build's
/// temporary files go; the directory for the template's defaults is made.
pub const FINISH: &str = r#"set -u
rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/cache/apt/*.bin \
  /root/.cache/pip /root/.npm/_cacache /home/*/.cache/pip /home/*/.npm/_cacache /var/tmp/* 2>/dev/null
mkdir -p /etc/wrenn
"#;
