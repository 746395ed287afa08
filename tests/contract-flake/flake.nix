# ucnb contract flake: UltraCloud's validation interface as the contract (seed: ultracloud-testing)
# describes it, and nothing more. It exists only to test ucnb's side of that contract: no inputs,
# no nixpkgs, every derivation built by /bin/sh. See README.md.
{
  description = "ucnb contract flake: UltraCloud's validation interface, for ucnb's tests only";

  outputs = { self }:
    let
      system = "x86_64-linux";
      contract = ./nix/test-cluster/contract.sh;

      # A build (or evaluation) fails when the file fail/<name> exists in the flake: builders and
      # pure evaluation never see the caller's environment, so these knobs are files.
      failing = name: builtins.pathExists (./fail + "/${name}");

      # A derivation whose builder runs `script` (PATH exported: a builder's is /path-not-set).
      drv = name: script: builtins.derivation {
        inherit name system;
        builder = "/bin/sh";
        args = [ "-c" ''
          export PATH=/usr/bin:/bin
          ${if failing name then ''
            echo "contract-flake: ${name} fails (fail/${name} is present in the flake)" >&2
            exit 1
          '' else ""}
          mkdir -p "$out"
          ${script}
        '' ];
      };

      # A store program that runs one contract.sh program (an app's `program` is a store path).
      program = name: subcommand: drv name ''
        mkdir -p "$out/bin"
        printf '#!/bin/sh\nexec /bin/sh %s %s "$@"\n' ${contract} ${subcommand} > "$out/bin/${name}"
        chmod +x "$out/bin/${name}"
      '';

      app = name: subcommand: { type = "app"; program = "${program name subcommand}/bin/${name}"; };

      check = name: what: drv name ''
        echo "${name}: ${what}" > "$out/check.log"
        echo '{"success": true, "check": "${name}"}' > "$out/result.json"
      '';

      # nixosConfigurations are plain attrsets: `nix eval …toplevel.drvPath --raw` works unbuilt.
      nixos = name:
        if failing name then throw "contract-flake: nixosConfigurations.${name} fails to evaluate (fail/${name})"
        else { config.system.build.toplevel = drv "nixos-system-${name}" ''
          echo "${name}" > "$out/nixos-version"
        ''; };
    in {
      packages.${system} = {
        single-node-trial-vm = drv "single-node-trial-vm" ''
          echo "single-node trial VM appliance (contract flake: no image)" > "$out/README"
        '';
      };

      apps.${system} = {
        single-node-quickstart = app "single-node-quickstart" "quickstart";
        single-node-trial = app "single-node-trial" "quickstart";
      };

      checks.${system} = {
        deployer-vm-smoke = check "deployer-vm-smoke"
          "nix-agent activated a host-built target closure without guest-side compilation";
        deployer-vm-rollback = check "deployer-vm-rollback"
          "failing health_check_command: observed status rolled-back, node left the rejected generation";
        canonical-profile-eval-guards = check "canonical-profile-eval-guards"
          "every canonical profile entrypoint evaluates";
        canonical-profile-build-guards = check "canonical-profile-build-guards"
          "single-node VM, HA control-plane configs, ISO and bare-metal outputs realise";
        portable-control-plane-regressions = check "portable-control-plane-regressions"
          "deployer-bootstrap-e2e, host-lifecycle-e2e, deployer-vm-smoke, fleet-scheduler-e2e";
        baremetal-iso-e2e = program "baremetal-iso-e2e" "baremetal-iso-e2e";
      };

      nixosConfigurations = builtins.listToAttrs (map (name: { inherit name; value = nixos name; }) [
        "single-node-quickstart" "netboot-all-in-one"
        "node01" "node02" "node03" "netboot-control-plane"
        "ultracloud-iso" "baremetal-qemu-control-plane" "baremetal-qemu-worker"
      ]);
    };
}
