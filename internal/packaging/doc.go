// Package packaging holds the install test of the pspf-edge Debian packages
// that packaging/package.sh builds (make package): it checks the ARM
// packages with dpkg-deb and qemu, then installs the amd64 package in a
// private root (an overlay of this machine's root in namespaces of the
// test's own, never on the machine itself), runs the agent the way the
// systemd unit does, upgrades, removes and purges it. The packaging files
// themselves live in packaging/ at the repository root.
package packaging
