"""The reference installer ISO and the installed system it lays down (stand-ins for the
product's ultracloud-iso live installer and nix-agent)."""

from ucnb.installer.build import (
           InstallerArtifacts,
           active_system_check,
           build_installer,
           build_iso,
           installer_kernel_params,
           write_install_bundle,
           write_target_system,
)

__all__ = ["InstallerArtifacts", "active_system_check", "build_installer", "build_iso",
           "installer_kernel_params", "write_install_bundle", "write_target_system"]
