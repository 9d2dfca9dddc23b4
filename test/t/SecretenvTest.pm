# Helpers shared by secretenv's TAP tests.
package SecretenvTest;

use strict;
use warnings;
use Exporter 'import';

our @EXPORT = qw(configure_rotation_keys);

# Make version 2 the current KEK and keep version 1 as the previous one, in
# postgresql.conf; reload and wait until new connections see version 2.
# Returns whether they did.
sub configure_rotation_keys
{
	my ($node, $new_passphrase, $old_passphrase) = @_;

	$node->append_conf(
		'postgresql.conf', qq{
secretenv.kek_passphrase = '$new_passphrase'
secretenv.kek_version = 2
secretenv.kek_previous_passphrase = '$old_passphrase'
secretenv.kek_previous_version = 1
});
	$node->reload;
	return $node->poll_query_until('postgres', 'SELECT secretenv.current_kek_version()', '2');
}

1;
