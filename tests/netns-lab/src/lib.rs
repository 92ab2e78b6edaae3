//! meshgate-netns-lab
