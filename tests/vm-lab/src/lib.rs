//! meshgate-vm-lab
