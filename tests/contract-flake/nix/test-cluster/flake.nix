# ucnb contract flake: the product's ./nix/test-cluster sub-flake (apps `cluster`, `hardware-smoke`).
# No inputs; programs are /bin/sh scripts in the store. See ../../README.md.
{
  description = "ucnb contract flake: UltraCloud's nix/test-cluster interface, for ucnb's tests only";

  outputs = { self }:
    let
      system = "x86_64-linux";
      app = name: subcommand: {
        type = "app";
        program = "${builtins.derivation {
          inherit name system;
          builder = "/bin/sh";
          args = [ "-c" ''
            export PATH=/usr/bin:/bin
            mkdir -p "$out/bin"
            printf '#!/bin/sh\nexec /bin/sh %s %s "$@"\n' ${./contract.sh} ${subcommand} > "$out/bin/${name}"
            chmod +x "$out/bin/${name}"
          '' ];
        }}/bin/${name}";
      };
    in {
      apps.${system} = {
        cluster = app "cluster" "cluster";
        hardware-smoke = app "hardware-smoke" "hardware-smoke";
      };
    };
}
