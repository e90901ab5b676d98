// Package packaging holds the install test of the pspf-edge Debian packages
// that packaging/package.sh builds (make package): it installs the amd64
// package on this machine, runs the agent the way the systemd unit does,
// removes and purges it, and checks the ARM packages with dpkg-deb. The
// packaging files themselves live in packaging/ at the repository root.
package packaging
